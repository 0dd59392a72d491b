"""The ECR wire format (protocol.py: newline-delimited JSON requests and replies, over TCP or a
serial port) and a till-side client (client.py, `python -m firmware.ecr.client`); the terminal's
side of the link is a front end, firmware/app/frontends/ecr_server.py."""
