"""The kernel edge: finit_module/delete_module, module state in /sys and /proc, persisting for modprobe."""
