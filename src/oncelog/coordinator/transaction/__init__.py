"""The transaction coordinator: transactional ids, epochs, two-phase commit with markers."""
