"""The diffusion model itself, free of federation and I/O: the U-Net (unet.py), noise schedules
(schedule.py), the training loss (loss.py), the DDPM/DDIM samplers (samplers.py) and sample grids
from a flat parameter vector (grids.py)."""
