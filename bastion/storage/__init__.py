"""Storage: the one interface every part of the bastion reads and writes through, and its SQLite implementation."""
