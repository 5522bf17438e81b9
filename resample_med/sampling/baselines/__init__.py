"""Reference methods with the same call signature as ReSample: FBP, CGLS, TV (PDHG), Latent-DPS."""
