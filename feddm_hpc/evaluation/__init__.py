"""Sample-quality evaluation (FD/KID/PRDC in LeNet features, memorization audit) and run reports."""
