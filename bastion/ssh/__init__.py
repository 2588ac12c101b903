"""SSH: the outer server, the inner servers presented as targets, upstream connections."""
