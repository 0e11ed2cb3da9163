"""Channels: the contract every channel keeps, and the Feishu custom-bot client."""
