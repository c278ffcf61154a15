"""Sample-quality evaluation (FD/KID/PRDC in the features of a classifier trained on the data set:
LeNet-5 for grey images, colour_net for RGB; memorization audit) and run reports."""
