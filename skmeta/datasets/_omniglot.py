"""Reader for the Omniglot dataset in its standard folder layout."""

from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

SUBSETS = ("images_background", "images_evaluation")


def load_omniglot(path, *, shape=(28, 28)):
    """Load Omniglot from a local folder; never downloads.

    Expects the layout of the official release, unzipped:
    ``path/images_background/<alphabet>/<character>/<drawing>.png`` and the
    same under ``path/images_evaluation``. Each character is a class; the
    background characters are the training classes and the evaluation
    characters the test classes (Lake et al., 2015). Needs Pillow
    (``pip install skmeta[omniglot]``).

    Parameters
    ----------
    path : str or path-like
        The folder that holds ``images_background`` and/or
        ``images_evaluation``.
    shape : tuple of int, default=(28, 28)
        Height and width to resize every drawing to (the few-shot
        literature's 28 x 28).

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``data`` (n, h * w) float32 in [0, 1] with ink as 1; ``images``
        (n, h, w); ``target`` (n,) class ids; ``target_names`` (one
        ``"alphabet/character"`` per class); ``train_classes`` and
        ``test_classes``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skmeta.datasets import load_omniglot
    >>> root = Path(tempfile.mkdtemp())
    >>> for character in ("character01", "character02"):
    ...     folder = root / "images_background" / "Latin" / character
    ...     folder.mkdir(parents=True)
    ...     Image.new("L", (105, 105), 255).save(folder / "drawing_01.png")
    >>> omniglot = load_omniglot(root)
    >>> omniglot.data.shape, omniglot.target_names.tolist()
    ((2, 784), ['Latin/character01', 'Latin/character02'])
    """
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError("load_omniglot needs Pillow: pip install "
                          "'skmeta[omniglot]'.") from error
    root = Path(path)
    subsets = [root / name for name in SUBSETS if (root / name).is_dir()]
    if not subsets:
        raise FileNotFoundError(
            f"No Omniglot folders under {root}: expected {SUBSETS[0]} and/or "
            f"{SUBSETS[1]} (the official zips, unpacked). skmeta never downloads.")
    images, target, names, split = [], [], [], {}
    for subset in subsets:
        characters = sorted(c for c in subset.glob("*/*") if c.is_dir())
        split[subset.name] = np.arange(len(names), len(names) + len(characters))
        for character in characters:
            for png in sorted(character.glob("*.png")):
                with Image.open(png) as image:
                    small = image.convert("L").resize(shape[::-1], Image.BILINEAR)
                images.append(1.0 - np.asarray(small, dtype=np.float32) / 255.0)
                target.append(len(names))
            names.append(f"{character.parent.name}/{character.name}")
    if not images:
        raise FileNotFoundError(f"No .png drawings found under {root}.")
    images = np.stack(images)
    empty = np.array([], dtype=int)
    return Bunch(data=images.reshape(len(images), -1), images=images,
                 target=np.array(target), target_names=np.array(names),
                 train_classes=split.get(SUBSETS[0], empty),
                 test_classes=split.get(SUBSETS[1], empty))
