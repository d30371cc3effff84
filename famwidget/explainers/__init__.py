"""The explanation methods, one module per family. They know nothing of the widget."""
