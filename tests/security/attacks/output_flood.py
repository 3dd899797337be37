# attack: endless output as fast as possible (the agent must cut it off at max_output)
# users: user
# sandbox: fresh
# mode: flood
# expect-microvm: contained
import os

chunk = b"A" * (1 << 16) + b"\n"
while True:
    os.write(1, chunk)
