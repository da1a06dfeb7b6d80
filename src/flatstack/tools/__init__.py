"""Helpers for building test and demo material with real tools."""
