"""The data lake (versioned Delta tables) and the content-addressed artifact store."""
