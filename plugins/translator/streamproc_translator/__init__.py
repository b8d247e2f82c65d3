"""streamproc plugin ``translator``: English -> Spanish GRU encoder-decoder with attention."""
