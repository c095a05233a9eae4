//! Placeholder library target: the kernel programs are the `geowall-ebpf` binary
//! of this crate (src/main.rs), built for `bpfel-unknown-none`.
#![no_std]
