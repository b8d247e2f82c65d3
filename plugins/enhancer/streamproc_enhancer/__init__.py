"""streamproc plugin: sub-pixel CNN super-resolution of thumbnails and generated artwork."""
