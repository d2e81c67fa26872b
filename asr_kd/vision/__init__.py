"""Image recipes of the paper: MNIST distillation and CIFAR-100 specialists."""
