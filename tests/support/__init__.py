"""Test support: private servers, subprocess helpers, deterministic waiting."""
