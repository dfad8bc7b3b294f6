"""Serve Keystone's public WSGI application on 127.0.0.1:PORT, one request at a time (sqlite:
concurrent token issues would lock the database). Usage: keystone_wsgi.py CONF PORT."""
import os
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def main():
    conf, port = sys.argv[1], int(sys.argv[2])
    os.environ["OS_KEYSTONE_CONFIG_FILES"] = conf
    sys.argv = sys.argv[:1]  # oslo.config parses sys.argv inside the application factory
    from keystone.server.wsgi import initialize_public_application
    app = initialize_public_application()
    make_server("127.0.0.1", port, app, handler_class=Quiet).serve_forever()


if __name__ == "__main__":
    main()
