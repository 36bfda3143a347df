"""Command groups of the `dispatcher` CLI that live in modules of their own."""
