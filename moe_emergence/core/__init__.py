"""What every stage uses: params (config), the stage wrapper (cli), atomic outputs, errors, the
allocator setting and the hub reachability check. It imports nothing else of the package."""
