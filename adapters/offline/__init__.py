"""Tooling outside the running loop: the SpamAssassin corpus fetch and its text extraction, the
simulated reviewers, and the label-efficiency harness (draws, rounds, curves)."""
