"""leanlm.bitdistiller"""

__version__ = "0.1.0"
