"""Handing the driver to Falco: config.d's engine file and the eBPF probe link."""
