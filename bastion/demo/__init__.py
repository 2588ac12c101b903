"""The demo: `bastion demo`, its local sshd targets and the development OIDC provider (not for production)."""
