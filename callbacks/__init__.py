"""Lightning callbacks that put RAdam's diagnostics into TensorBoard (installed as ``lightning_radam.callbacks``)."""

__all__: list = []
