"""Shared code for the story-image alignment notebooks.

The chapters in ``notebooks/`` narrate; this package computes. Importing it is cheap
(no torch, no pandas): each submodule pulls in what it needs.
"""

__version__ = "0.1.0"
