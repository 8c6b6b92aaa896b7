"""MNIST as 32x32x3 images in an ``.npz``, for models that take CIFAR-shaped inputs.

``python benchmarks/padded_mnist_npz.py OUT.npz [--train 10000]`` writes the first
``--train`` MNIST training images and all test images, zero-padded to 32x32 and
repeated over three channels, with their labels (``dataset="npz:OUT.npz"``). The
compaction figures of BasicCNN in docs/results/compaction.md use it, CIFAR-10 not being
available offline.
"""

import argparse

import numpy as np

from sparsejax.data.images import read_image_dataset


def rgb32(images: np.ndarray) -> np.ndarray:
  """``(n, 28, 28, 1)`` uint8 images as ``(n, 32, 32, 3)``: zero border, channel repeated."""
  return np.repeat(np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("out")
  parser.add_argument("--train", type=int, default=10_000)
  args = parser.parse_args()
  data = read_image_dataset("mnist")
  np.savez(args.out, x_train=rgb32(data.train_images[:args.train]),
           y_train=data.train_labels[:args.train].astype(np.int32),
           x_test=rgb32(data.test_images), y_test=data.test_labels.astype(np.int32))


if __name__ == "__main__":
  main()
