"""`falco-driver-loader install ...` with the kernel-module seam (`KernelModules`) rooted in a fake
/sys, /proc and /dev, for the fast-path row: the real command line and pipeline, minus the real kernel.

    python bench/install_with_fake_kernel.py KERNEL_ROOT install --type kmod ...

KERNEL_ROOT holds sys/, proc/ and dev/. The command line has no option for these roots, so this wraps the install
entry point the `install` subcommand calls; everything else runs as `python -m driver_loader` would.
"""

from __future__ import annotations

import os
import sys

from driver_loader.cli import main as cli
from driver_loader.cli.commands import install as install_command
from driver_loader.kernel.modules import KernelModules
from driver_loader.pipeline.install import Edges


def main() -> None:
    root, argv = sys.argv[1], sys.argv[2:]
    kernel = KernelModules(sys_root=os.path.join(root, "sys"), proc_root=os.path.join(root, "proc"),
                           dev_root=os.path.join(root, "dev"))
    real_install = install_command.install

    def install_on_fake_kernel(settings, edges=None):
        return real_install(settings, edges or Edges(kernel=kernel))

    install_command.install = install_on_fake_kernel
    cli.main(argv)


if __name__ == "__main__":
    main()
