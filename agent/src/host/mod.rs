//! Facts of the host, without BPF: the cgroup v2 hierarchy ([`cgroup`]),
//! the cgroups of systemd units ([`units`]), users and groups ([`users`]),
//! processes ([`proc`]), files' versions ([`stamp`]), the service manager
//! ([`notify`]) and which socket sent to one of ours ([`sockdiag`]).

pub mod cgroup;
pub mod notify;
pub mod proc;
pub mod sockdiag;
pub mod stamp;
pub mod units;
pub mod users;
