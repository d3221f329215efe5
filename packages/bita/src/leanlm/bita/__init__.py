"""leanlm.bita"""

__version__ = "0.1.0"
