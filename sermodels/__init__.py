"""sermodels: speech emotion recognition recipes built on kdekit."""
__version__ = "0.1.0"
