"""Evidence: session recordings, hash chains, seals, checkpoints, verification, exports, bundles and retention."""
