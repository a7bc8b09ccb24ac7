"""Running research: settings wired to components, starting and resuming runs, the manifest, the demo
setup.
"""
