"""Training with torch + Lightning: LightningModules, optimizer/schedule helpers, the Trainer."""
