"""Runtimes behind one small interface (see base.Engine)."""
