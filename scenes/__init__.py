"""MJCF scenes of the SO-101 arm (shipped as package data)."""
