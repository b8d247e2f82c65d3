"""streamproc-artwork: a class-conditional Fashion-MNIST GAN (plugin ``artwork``)."""
