"""falco-driver-loader: put the right Falco driver on this node, verified."""

__version__ = "0.1.0"
