# %% [markdown]
# # Train a small convolutional network on 8x8 images of handwritten digits
#
# The images are scikit-learn's digits (1797 scans of 0-9, 8x8 pixels of 0-16, shipped inside the
# package: no download). Without scikit-learn the example draws similar images itself from a
# 5x7 pixel font, shifted, thickened and noisy, and says so. The network is the classic pattern:
# two blocks of Conv2d (3x3, padding 1) -> ReLU -> MaxPool2d(2), which turn 1x8x8 into 32x2x2, then
# Flatten and a Linear layer to the 10 classes. Batches come from minifuse.utils.data (a
# TensorDataset, random_split, a shuffling DataLoader) and the learning rate follows a cosine schedule.
# Target: at least 95% test accuracy (asserted at the end); measured: 97.8% on scikit-learn's
# digits, 99.4% on the drawn ones, in about 10 s on a shared, busy 2-core machine.
# Run: python examples/08_cnn_digits.py   (pip install scikit-learn for the real scans)

# %%
import time

import numpy as np

import minifuse as mf
import minifuse.nn as nn
from minifuse import optim
from minifuse.utils.data import DataLoader, TensorDataset, random_split

TARGET_ACCURACY = 0.95

# %% [markdown]
# ## 1. The data
# scikit-learn's scans when it is installed; otherwise digits drawn from a 5x7 pixel font at a
# random place, sometimes bolder, with noise, in the same 0-16 range.

# %%
FONT = {  # 5x7 glyphs, '#' = ink
    0: [" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "],
    1: ["  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
    2: [" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"],
    3: ["#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "],
    4: ["   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "],
    5: ["#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "],
    6: ["  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "],
    7: ["#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "],
    8: [" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "],
    9: [" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "],
}


def drawn_digits(n, rng):
    """n images like scikit-learn's: a glyph at a random place in 8x8, sometimes one pixel
    bolder, ink 10-16 plus noise, clipped to [0, 16]."""
    labels = rng.integers(0, 10, n)
    images = np.zeros((n, 8, 8))
    for img, label in zip(images, labels):
        glyph = np.array([[c == "#" for c in row] for row in FONT[label]], dtype=float)
        if rng.random() < 0.5:
            glyph[:, 1:] = np.maximum(glyph[:, 1:], glyph[:, :-1])
        r, c = rng.integers(0, 2), rng.integers(0, 4)
        img[r:r + 7, c:c + 5] = glyph * rng.uniform(10, 16)
    images += rng.normal(0, 2, images.shape)
    return np.clip(images, 0, 16), labels


def load_digits(rng):
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        print("scikit-learn is not installed: drawing 1797 digits from a pixel font instead")
        return drawn_digits(1797, rng)
    digits = sklearn_digits()
    print("scikit-learn's digits: 1797 scanned 8x8 images")
    return digits.images, digits.target


# %% [markdown]
# ## 2. The network
# Two blocks of Conv2d (3x3, padding 1) -> ReLU -> MaxPool2d(2): 1x8x8 -> 16x4x4 -> 32x2x2, then
# Flatten and a Linear layer to the 10 classes.

# %%
def make_model():
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 16 x 4 x 4
        nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 32 x 2 x 2
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10))


# %% [markdown]
# ## 3. Training and test
# An 80/20 split (random_split), shuffled batches of 64 (DataLoader), AdamW with a cosine
# learning-rate schedule, cross-entropy; then the accuracy on the held-out fifth.

# %%
def main(epochs=15):
    mf.manual_seed(0)
    images, labels = load_digits(np.random.default_rng(0))
    x = mf.tensor((images / 16.0).astype(np.float32)).unsqueeze(1)       # (N, 1, 8, 8), channels first
    data = TensorDataset(x, mf.tensor(labels))
    train, test = random_split(data, [0.8, 0.2], generator=0)
    loader = DataLoader(train, batch_size=64, shuffle=True, generator=0)
    model = make_model()
    opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for xb, yb in loader:
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
        schedule.step()
        if epoch % 5 == 0 or epoch == epochs - 1:
            print(f"epoch {epoch:3d}  train loss {total / len(train):.4f}  lr {schedule.get_last_lr()[0]:.2e}")
    model.eval()
    with mf.no_grad():
        xt, yt = next(iter(DataLoader(test, batch_size=len(test))))      # the whole test set, one batch
        accuracy = (model(xt).argmax(-1).numpy() == yt.numpy()).mean()
    print(f"test accuracy {accuracy:.3f} on {len(test)} images after {time.perf_counter() - start:.1f} s "
          f"(target {TARGET_ACCURACY})")
    assert accuracy >= TARGET_ACCURACY, f"test accuracy {accuracy:.3f} is below {TARGET_ACCURACY}"
    return accuracy


if __name__ == "__main__":
    main()
