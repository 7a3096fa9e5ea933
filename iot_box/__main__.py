# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import sys

NOT_BUILT = 2


def main():
    print(
        "iot_box: the station service is not built yet "
        "(see doc/modules/iot_box.md)", file=sys.stderr)
    return NOT_BUILT


if __name__ == '__main__':
    sys.exit(main())
