"""Local builds: DKMS for the kernel module, make for the legacy eBPF probe."""
