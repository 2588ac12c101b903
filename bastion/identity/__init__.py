"""Identity: certificate authorities, certificates and who a connection belongs to."""
