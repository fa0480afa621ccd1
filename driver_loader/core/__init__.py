"""The functional core: settings, versions, kernel releases, artifact names, distro rules, the plan, the
acquisition policy and the pre-load checks. Pure: no file, network, subprocess or kernel access."""
