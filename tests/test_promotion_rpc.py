# This file is part of fuelpay.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Promotions over XML-RPC on a running server

Lanshan Energy's administrator sets up a unit-price discount for A01 and
a coupon; the attendant's orders are priced with them. Heping Fuel's users
neither see nor use any of it. The rule is ended at the end of the test,
so the fills of the other system tests sharing the demo are not priced
with it."""
import uuid
import xmlrpc.client
from decimal import Decimal

import pytest
from test_payment_rpc import fill, ingest, method_id, paid_order
from test_rpc_isolation import call, station_id, xmlrpc_proxy


def company_of(proxy, station):
    record, = call(proxy, 'fuel.station', 'read', [station], ['company'])
    return record['company']


def test_promotions_isolated_and_applied(server):
    a01 = station_id(server, 'A01')
    b01 = station_id(server, 'B01')
    lanshan = xmlrpc_proxy(server, 'lanshan.admin')
    manager = xmlrpc_proxy(server, 'lanshan.a01.manager')
    attendant = xmlrpc_proxy(server, 'lanshan.a01.attendant')
    heping = xmlrpc_proxy(server, 'heping.admin')
    heping_attendant = xmlrpc_proxy(server, 'heping.b01.attendant')
    cash = method_id(server, "Lanshan Energy", 'cash')
    company = company_of(lanshan, a01)

    rule, = call(lanshan, 'fuel.promotion.rule', 'create', [{
                'company': company, 'name': "A01 -0.50/L", 'kind': 'unit',
                'unit_discount': 0.5, 'stations': [('add', [a01])]}])
    call(lanshan, 'fuel.promotion.rule', 'activate', [rule])
    try:
        template, = call(lanshan, 'fuel.promotion.coupon.template',
            'create', [{
                    'company': company, 'name': "10 off", 'kind': 'fixed',
                    'amount': 10, 'validity': 'days', 'duration': 7}])
        call(lanshan, 'fuel.promotion.coupon.template', 'activate',
            [template])
        coupon, = call(lanshan, 'fuel.promotion.coupon.template', 'issue',
            template, None, 1)
        code, = [c['code'] for c in call(lanshan, 'fuel.promotion.coupon',
                'read', [coupon], ['code'])]

        # Heping sees none of it and changes none of it
        for login in ['heping.admin', 'heping.b01.attendant']:
            proxy = xmlrpc_proxy(server, login)
            for model, record in [
                    ('fuel.promotion.rule', rule),
                    ('fuel.promotion.coupon.template', template),
                    ('fuel.promotion.coupon', coupon),
                    ]:
                assert record not in call(
                    proxy, model, 'search', [], 0, None, None)
                with pytest.raises(xmlrpc.client.Fault):
                    call(proxy, model, 'read', [record], ['name'
                            if model != 'fuel.promotion.coupon'
                            else 'code'])
        with pytest.raises(xmlrpc.client.Fault):
            call(heping, 'fuel.promotion.rule', 'end', [rule])
        with pytest.raises(xmlrpc.client.Fault):
            call(heping, 'fuel.promotion.coupon.template', 'issue',
                template, None, 1)
        # nor may the attendant set up promotions
        with pytest.raises(xmlrpc.client.Fault):
            call(attendant, 'fuel.promotion.rule', 'create', [{
                        'company': company, 'name': "Mine", 'kind': 'unit',
                        'unit_discount': 5}])

        # a Heping order does not take the Lanshan code
        own, = ingest(heping, fill(b01, '5.000', None))
        assert own['status'] == 'created', own
        heping_order = paid_order(heping_attendant, [own['id']])
        with pytest.raises(xmlrpc.client.Fault) as info:
            call(heping_attendant, 'fuel.payment.order', 'redeem_coupon',
                heping_order, code)
        assert 'There is no coupon' in info.value.faultString
        record, = call(heping_attendant, 'fuel.payment.transaction', 'read',
            [own['id']], ['discount'])
        assert record['discount'] == Decimal('0.00')

        # the Lanshan attendant's order is priced with the rule and the
        # coupon, the payment sent twice uses the coupon once
        result, = ingest(manager, fill(a01, '30.000', '227.40'))
        assert result['state'] == 'to_pay', result
        order = paid_order(attendant, [result['id']])
        # nor a Lanshan order, by its id
        with pytest.raises(xmlrpc.client.Fault):
            call(heping_attendant, 'fuel.payment.order', 'redeem_coupon',
                order, code)
        total = call(attendant, 'fuel.payment.order', 'redeem_coupon',
            order, code)
        # 227.40 - 30 x 0.50 - 10.00
        assert total == Decimal('202.40')
        transaction, = call(attendant, 'fuel.payment.transaction', 'read',
            [result['id']], ['discount', 'amount_due', 'promotion_discounts'])
        assert transaction['discount'] == Decimal('25.00')
        assert transaction['amount_due'] == Decimal('202.40')
        lines = call(attendant, 'fuel.promotion.discount', 'read',
            transaction['promotion_discounts'], ['rule', 'coupon', 'amount'])
        assert {(r['rule'], r['coupon'], r['amount']) for r in lines} == {
            (rule, None, Decimal('15.00')),
            (None, coupon, Decimal('10.00'))}
        with pytest.raises(xmlrpc.client.Fault):
            call(heping, 'fuel.promotion.discount', 'read',
                transaction['promotion_discounts'], ['amount'])

        payment = {'method': cash, 'amount': '202.40',
            'uuid': str(uuid.uuid4())}
        paid = call(attendant, 'fuel.payment.order', 'pay_rpc', order,
            [payment])
        again = call(attendant, 'fuel.payment.order', 'pay_rpc', order,
            [payment])
        assert paid['state'] == again['state'] == 'paid'
        assert again['amount_paid'] == Decimal('202.40')
        record, = call(lanshan, 'fuel.promotion.coupon', 'read', [coupon],
            ['state', 'order'])
        assert record == {'id': coupon, 'state': 'used', 'order': order}
        other = paid_order(attendant,
            [ingest(manager, fill(a01, '10.000', '75.80'))[0]['id']])
        with pytest.raises(xmlrpc.client.Fault) as info:
            call(attendant, 'fuel.payment.order', 'redeem_coupon', other,
                code)
        assert 'cannot be redeemed' in info.value.faultString
        for proxy, draft in [
                (attendant, other), (heping_attendant, heping_order)]:
            call(proxy, 'fuel.payment.order', 'cancel', [draft])
    finally:
        call(lanshan, 'fuel.promotion.rule', 'end', [rule])


def test_members_and_pushes_isolated(server):
    a01 = station_id(server, 'A01')
    lanshan = xmlrpc_proxy(server, 'lanshan.admin')
    heping = xmlrpc_proxy(server, 'heping.admin')
    company = company_of(lanshan, a01)
    party, = call(lanshan, 'party.party', 'search',
        [('name', '=', "Liu Yang")], 0, None, None)

    # a member card of Lanshan: the demo wallet of Liu Yang, or a new one
    card = call(lanshan, 'fuel.promotion.member', 'claim_card', company,
        party)
    assert call(lanshan, 'fuel.promotion.member', 'claim_card', company,
        party) == card
    record, = call(lanshan, 'fuel.payment.wallet.card', 'read', [card],
        ['wallet.party', 'member_level'])
    assert record['wallet.']['party'] == party
    member, = call(lanshan, 'fuel.promotion.member', 'search',
        [('party', '=', party)], 0, None, None)
    assert member not in call(
        heping, 'fuel.promotion.member', 'search', [], 0, None, None)
    with pytest.raises(xmlrpc.client.Fault):
        call(heping, 'fuel.promotion.member', 'read', [member], ['points'])
    with pytest.raises(xmlrpc.client.Fault) as info:
        call(heping, 'fuel.promotion.member', 'claim_card', company, party)
    assert 'You cannot make members' in info.value.faultString

    # a push of Lanshan and its segment stay Lanshan's
    push, = call(lanshan, 'fuel.promotion.push', 'create', [{
                'company': company, 'name': "Dormant", 'subject': "Hello",
                'dormant_days': 3650}])
    assert call(lanshan, 'fuel.promotion.push', 'select_parties', push
        ) == []
    with pytest.raises(xmlrpc.client.Fault):
        call(heping, 'fuel.promotion.push', 'select_parties', push)
    with pytest.raises(xmlrpc.client.Fault):
        call(heping, 'fuel.promotion.push', 'read', [push], ['name'])
