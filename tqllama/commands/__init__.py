"""Thin click commands; the logic they call lives in plain modules beside this package."""
