"""Evidence: the store, session recordings and their exports."""
