#![no_std]
// The eBPF programs live in main.rs; this empty library lets close-wait-user
// list the crate as a build-dependency (rebuild on change), as aya-template does.
