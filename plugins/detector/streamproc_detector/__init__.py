"""streamproc plugin: single-shot CNN detector of clothing items in uploaded pictures."""
