//! What the kernel's tables hold, computed without touching the kernel:
//! a plan laid out in the ABI of `geowall-common` ([`layout`]), the grant
//! entries of the approvals ([`grants`]), the names of the kernel's codes
//! ([`codes`]), and the verdict those tables give a destination
//! ([`explain`]), read through [`explain::TableView`] from the tables
//! built here or from the kernel's own.

pub mod codes;
pub mod explain;
pub mod grants;
pub mod layout;
pub mod names;

pub use layout::{Layout, LayoutError, Tables, layout};
