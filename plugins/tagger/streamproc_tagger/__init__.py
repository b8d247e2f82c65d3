"""streamproc-tagger: a Fashion-MNIST CNN that tags uploaded images (plugin ``tagger``)."""
