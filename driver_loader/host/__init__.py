"""Reading the host: uname, the host root's files, the running kernel's facts, modern_ebpf support, and
where the driver version comes from when none is given."""
