//! Facts of the host, without BPF: the cgroup v2 hierarchy ([`cgroup`]),
//! users and groups ([`users`]), processes ([`proc`]) and the service
//! manager ([`notify`]).

pub mod cgroup;
pub mod notify;
pub mod proc;
pub mod users;
