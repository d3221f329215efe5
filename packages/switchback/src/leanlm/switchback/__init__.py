"""leanlm.switchback"""

__version__ = "0.1.0"
