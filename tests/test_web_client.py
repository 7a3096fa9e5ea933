# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The sao web client in Debian's chromium, driven by Playwright"""
import os
import pathlib

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get('FUEL_CHROMIUM', '/usr/bin/chromium')
RESULTS = pathlib.Path(__file__).resolve().parent.parent / 'var' / (
    'test-results')
# Flags for a machine without display, sandbox or outside network
CHROMIUM_ARGS = [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update',
    '--disable-sync']
TIMEOUT = 30_000  # ms; the first page load compiles sao's bundle


@pytest.fixture(scope='module')
def browser():
    if not os.environ.get('FUEL_SAO_ROOT'):
        pytest.fail(
            "FUEL_SAO_ROOT must point at the sao web client "
            "(./fuel test installs it)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={'width': 1280, 'height': 720})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    try:
        yield page
    finally:
        context.close()


def login(page, server, login):
    page.goto(f'{server.url}/#{server.database}')
    # sao may still be filling the dialog when it first shows: submit until
    # it asks for the password
    password = page.locator('input[type=password]')
    for _ in range(5):
        page.fill('#login', login)
        page.keyboard.press('Enter')
        try:
            password.wait_for(timeout=5_000)
            break
        except PlaywrightTimeoutError:
            continue
    password.fill(server.password)
    page.keyboard.press('Enter')
    page.get_by_text('Fuel', exact=True).click()


def open_stations(page):
    page.get_by_text('Stations', exact=True).first.dblclick()
    page.locator('.treeview').get_by_text('West Lake Station').wait_for()


def screenshot(page, name):
    RESULTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=RESULTS / f'{name}.png')


def test_administrator_opens_station_list(page, server):
    login(page, server, 'admin')
    open_stations(page)
    rows = page.locator('.treeview tbody tr')
    text = rows.all_inner_texts()
    assert any('Harbour Road Station' in t for t in text)
    assert any('Binjiang Hydrogen Station' in t for t in text)
    screenshot(page, 'web-client-admin-stations')


def test_operator_sees_only_own_stations(page, server):
    login(page, server, 'lanshan.admin')
    open_stations(page)
    text = ' '.join(page.locator('.treeview tbody tr').all_inner_texts())
    assert 'Binjiang Hydrogen Station' in text
    assert 'Harbour Road Station' not in text
    screenshot(page, 'web-client-operator-stations')


def test_open_station_form_shows_nozzles(page, server):
    login(page, server, 'lanshan.admin')
    open_stations(page)
    page.locator('.treeview').get_by_text('West Lake Station').dblclick()
    page.get_by_text('Dispensers', exact=True).last.click()
    page.get_by_text('EV Charger 1').first.wait_for()
    assert page.get_by_text('CNG Island').count() >= 1
    screenshot(page, 'web-client-station-form')
