"""FD/KID/PRDC of 1,000 real CIFAR-10 test JPEGs against the evaluation's reference (1,000 seeded
training JPEGs) in the colour network's features: the floor a perfect model would reach at N=1000."""
import json
import numpy as np
from feddm_hpc.data import load_dataset
from feddm_hpc.evaluation.reference import load_reference
from feddm_hpc.evaluation.scores import REFERENCE_SEED, evaluate_samples, reference_indices
path = "../shared/data/cifar10-jpeg"   # from the repository root
opts = {"image_size": None, "channels": 3, "center_crop": False}
ref = load_reference("image_folder", path, options=opts)
real_u8 = ref.images[reference_indices(len(ref.images), 1000, REFERENCE_SEED)]
test = load_dataset("image_folder", path, "test", **opts)
imgs = test.images if hasattr(test, "images") else test[0]
pick = np.random.default_rng(1).choice(len(imgs), 1000, replace=False)
out = {}
for name, fake in (("test_1000", np.asarray(imgs)[pick]),
                   ("train_other_1000", ref.images[np.random.default_rng(7).choice(len(ref.images), 1000, replace=False)])):
    r = evaluate_samples(fake, real_u8, ref.extractor, ref.num_classes, seed=REFERENCE_SEED)
    out[name] = {k: r[k] for k in ("fd", "kid", "precision", "recall", "density", "coverage", "class_histogram_distance")}
print(json.dumps(out, indent=1))
